-- Trading activity of each scope over the whole history: fees and traded notional (weighted like NAV) and
-- the number of fills. Every scope of int_scope_accounts has a row, with zeros when it never traded.
with fills as (
    select account_id, notional, fee_quote from {{ ref('int_fills_quote_fee') }}
)

select
    s.scope,
    s.scope_id,
    coalesce(sum({{ apply_weight('f.fee_quote', 's.weight') }}), 0) as fees,
    coalesce(sum({{ apply_weight('f.notional', 's.weight') }}), 0) as traded_notional,
    count(f.account_id) as fills
from {{ ref('int_scope_accounts') }} as s
left join fills as f on f.account_id = s.account_id
group by s.scope, s.scope_id
