-- Current risk figures of every scope (the last hour of nav_hourly): gross and net exposure, NAV,
-- leverage = gross / NAV (NULL unless NAV > 0), the Herfindahl-Hirschman concentration of the gross exposure
-- (sum of squared shares; 1 = a single position) and the largest line's share of gross. With no open
-- position the exposures are 0 and the two concentration figures NULL (undefined, as in docs/metrics.md).
with last_nav as (
    select scope, scope_id, nav
    from {{ ref('nav_hourly') }}
    where hour = (select max(hour) from {{ ref('nav_hourly') }})
),

exposure as (
    select
        scope,
        scope_id,
        sum(gross) as gross_exposure,
        sum(net) as net_exposure,
        sum(share_of_gross * share_of_gross) as concentration_hhi,
        max(share_of_gross) as largest_position_share
    from {{ ref('exposures') }}
    group by scope, scope_id
)

select
    n.scope,
    n.scope_id,
    coalesce(e.gross_exposure, 0) as gross_exposure,
    coalesce(e.net_exposure, 0) as net_exposure,
    n.nav,
    case
        when n.nav > 0 then cast(coalesce(e.gross_exposure, 0) as double precision) / cast(n.nav as double precision)
    end as leverage,
    e.concentration_hhi,
    e.largest_position_share
from last_nav as n
left join exposure as e on e.scope = n.scope and e.scope_id = n.scope_id
