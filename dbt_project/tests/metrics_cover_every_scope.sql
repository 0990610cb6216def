-- Every scope with a NAV has its performance rows (daily and hourly), its trade statistics and its 6 VaR
-- rows. Python marts: not built on the postgres target, so neither is this test.
{{ config(enabled=target.type != 'postgres') }}

with scopes as (
    select distinct scope, scope_id from {{ ref('nav_daily') }}
),

coverage as (
    select
        s.scope,
        s.scope_id,
        (select count(*) from {{ ref('performance') }} as p
            where p.scope = s.scope and p.scope_id = s.scope_id) as performance_rows,
        (select count(*) from {{ ref('trade_stats') }} as t
            where t.scope = s.scope and t.scope_id = s.scope_id) as trade_stats_rows,
        (select count(*) from {{ ref('risk_var') }} as v
            where v.scope = s.scope and v.scope_id = s.scope_id) as risk_var_rows
    from scopes as s
)

select *
from coverage
where performance_rows <> 2 or trade_stats_rows <> 1 or risk_var_rows <> 6
