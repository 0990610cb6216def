-- Invariant: in every row of nav_hourly, NAV = cash + positions_value.
-- Threshold 1e-9 (quote units): the columns are NUMERIC(38,18) sums, so any difference at all means a
-- model computed NAV some other way; 1e-9 only leaves room for a future float path (weighted scopes).
-- Fails with every offending row.
select hour, scope, scope_id, cash, positions_value, nav, nav - (cash + positions_value) as difference
from {{ ref('nav_hourly') }}
where abs(nav - (cash + positions_value)) > 1e-9
    or nav is null
