-- Deposits (+) and withdrawals (-), one row per id; `flow_at` is when the money moved (raw `ts`).
with ranked as (
    select
        cast(id as varchar) as flow_id,
        cast(account_id as varchar) as account_id,
        cast(user_id as varchar) as user_id,
        upper(cast(asset as varchar)) as asset,
        cast(amount as numeric(38, 18)) as amount,
        cast(ts as timestamp with time zone) as flow_at,
        cast(created_at as timestamp with time zone) as created_at,
        row_number() over (partition by id order by created_at desc) as version_rank
    from {{ source('raw', 'capital_flows') }}
)

select flow_id, account_id, user_id, asset, amount, flow_at, created_at
from ranked
where version_rank = 1
