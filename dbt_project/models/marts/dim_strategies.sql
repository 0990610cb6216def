-- Strategies as in raw.strategies (id renamed strategy_id), plus derived labels.
with assignment_counts as (
    select strategy_id, count(*) as active_accounts
    from {{ ref('stg_strategy_assignments') }}
    where active
    group by strategy_id
)

select
    s.strategy_id,
    s.name,
    s.kind,
    s.status,
    s.created_at,
    s.status = 'active' as is_active,
    s.name || ' (' || s.kind || ')' as strategy_label,
    coalesce(c.active_accounts, 0) as active_accounts
from {{ ref('stg_strategies') }} as s
left join assignment_counts as c on c.strategy_id = s.strategy_id
