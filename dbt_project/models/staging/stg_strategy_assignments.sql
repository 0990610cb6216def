-- Strategy <-> account assignments, one row per (strategy_id, account_id). The raw table has no version
-- column, so among exact-key duplicates an active row wins, then the larger allocation (deterministic).
with ranked as (
    select
        cast(strategy_id as varchar) as strategy_id,
        cast(account_id as varchar) as account_id,
        cast(allocation as numeric(38, 18)) as allocation,
        cast(active as boolean) as active,
        row_number() over (
            partition by strategy_id, account_id
            order by cast(active as boolean) desc, allocation desc
        ) as version_rank
    from {{ source('raw', 'strategy_assignments') }}
)

select strategy_id, account_id, allocation, active
from ranked
where version_rank = 1
