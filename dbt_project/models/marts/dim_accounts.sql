-- Exchange accounts as in raw.user_accounts (id renamed account_id), plus derived labels.
with strategy_counts as (
    select account_id, count(*) as active_strategies
    from {{ ref('stg_strategy_assignments') }}
    where active
    group by account_id
)

select
    a.account_id,
    a.user_id,
    a.exchange,
    a.label,
    a.active,
    a.created_at,
    u.username,
    coalesce(u.username, '?') || ' / ' || a.exchange || ' / ' || a.label as account_label,
    coalesce(s.active_strategies, 0) as active_strategies
from {{ ref('stg_accounts') }} as a
left join {{ ref('stg_users') }} as u on u.user_id = a.user_id
left join strategy_counts as s on s.account_id = a.account_id
