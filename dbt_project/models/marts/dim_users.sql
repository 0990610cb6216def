-- Users as in raw.users (id renamed user_id), plus derived labels.
with account_counts as (
    select user_id, count(*) as accounts, count(*) filter (where active) as active_accounts
    from {{ ref('stg_accounts') }}
    group by user_id
)

select
    u.user_id,
    u.username,
    u.role,
    u.status,
    u.created_at,
    u.status = 'active' as is_active,
    u.username || ' (' || u.role || ')' as user_label,
    coalesce(c.accounts, 0) as accounts,
    coalesce(c.active_accounts, 0) as active_accounts
from {{ ref('stg_users') }} as u
left join account_counts as c on c.user_id = u.user_id
