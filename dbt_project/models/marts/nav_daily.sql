-- NAV of every scope at the end of every UTC day: the NAV of the day's last hour, the day's capital flows,
-- and the time-weighted daily return (nav - net_flows) / previous day's nav - 1 (NULL on the scope's first
-- day). The last day can be partial: its NAV is the last marked hour's.
with hours as (
    select
        {{ utc_date('hour') }} as day,
        scope,
        scope_id,
        nav,
        net_flows,
        row_number() over (partition by scope, scope_id, {{ utc_date('hour') }} order by hour desc) as from_end
    from {{ ref('nav_hourly') }}
),

days as (
    select
        day,
        scope,
        scope_id,
        max(case when from_end = 1 then nav end) as nav,
        sum(net_flows) as net_flows
    from hours
    group by day, scope, scope_id
)

select
    day,
    scope,
    scope_id,
    nav,
    net_flows,
    {{ period_return('nav', 'net_flows', 'lag(nav) over (partition by scope, scope_id order by day)') }}
        as "return"
from days
