-- Exchange accounts (raw.user_accounts), one row per id.
with ranked as (
    select
        cast(id as varchar) as account_id,
        cast(user_id as varchar) as user_id,
        lower(cast(exchange as varchar)) as exchange,
        cast(label as varchar) as label,
        cast(active as boolean) as active,
        cast(created_at as timestamp with time zone) as created_at,
        row_number() over (partition by id order by created_at desc) as version_rank
    from {{ source('raw', 'user_accounts') }}
)

select account_id, user_id, exchange, label, active, created_at
from ranked
where version_rank = 1
