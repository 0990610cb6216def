-- Users, one row per id (a full copy; duplicates would be an extract bug, the latest wins).
with ranked as (
    select
        cast(id as varchar) as user_id,
        cast(username as varchar) as username,
        lower(cast(role as varchar)) as role,
        lower(cast(status as varchar)) as status,
        cast(created_at as timestamp with time zone) as created_at,
        row_number() over (partition by id order by created_at desc) as version_rank
    from {{ source('raw', 'users') }}
)

select user_id, username, role, status, created_at
from ranked
where version_rank = 1
