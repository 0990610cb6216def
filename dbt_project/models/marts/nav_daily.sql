-- NAV of every scope at the end of every UTC day: the NAV of the day's last hour, the day's capital flows,
-- and the time-weighted daily return (nav - net_flows) / previous day's nav - 1 (NULL on the scope's first
-- day). The last day can be partial: its NAV is the last marked hour's.
-- Incremental: the days from the day of recompute_from_hour() on; the first returns on the stored NAV before.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='day',
    meta={'changed_rows': {'column': 'day', 'since': 'day'}},
) }}

with {% if is_incremental() %}bounds as (
    select {{ utc_date(recompute_from_hour()) }} as from_day
),

{% endif %}hours as (
    select
        {{ utc_date('hour') }} as day,
        scope,
        scope_id,
        nav,
        net_flows,
        row_number() over (partition by scope, scope_id, {{ utc_date('hour') }} order by hour desc) as from_end
    from {{ ref('nav_hourly') }}
    {% if is_incremental() %}where {{ utc_date('hour') }} >= (select from_day from bounds){% endif %}
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
),

all_days as (
    select day, scope, scope_id, nav, net_flows, true as is_new
    from days
    {% if is_incremental() %}
    union all
    select t.day, t.scope, t.scope_id, t.nav, t.net_flows, false
    from {{ this }} as t
    where t.day = (select max(p.day) from {{ this }} as p where p.day < (select from_day from bounds))
    {% endif %}
),

with_returns as (
    select
        day,
        scope,
        scope_id,
        nav,
        net_flows,
        is_new,
        {{ period_return('nav', 'net_flows', 'lag(nav) over (partition by scope, scope_id order by day)') }}
            as period_return
    from all_days
)

select day, scope, scope_id, nav, net_flows, period_return as "return"
from with_returns
where is_new
