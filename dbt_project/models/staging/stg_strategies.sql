-- Strategies, one row per id.
with ranked as (
    select
        cast(id as varchar) as strategy_id,
        cast(name as varchar) as name,
        cast(kind as varchar) as kind,
        lower(cast(status as varchar)) as status,
        cast(created_at as timestamp with time zone) as created_at,
        row_number() over (partition by id order by created_at desc) as version_rank
    from {{ source('raw', 'strategies') }}
)

select strategy_id, name, kind, status, created_at
from ranked
where version_rank = 1
