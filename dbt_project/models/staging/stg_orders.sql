-- Orders, one row per id: the extract upserts on updated_at, so the latest version wins.
-- Incremental: only the raw partitions extracted since the last build are ranked (macros/incremental.sql);
-- filtering on updated_at before ranking keeps the same winner, since the latest version of an id is the one
-- with the greatest updated_at.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='order_id',
    meta={'changed_rows': {'column': 'updated_at', 'since': 'orders'}},
) }}

with ranked as (
    select
        cast(id as varchar) as order_id,
        cast(account_id as varchar) as account_id,
        cast(user_id as varchar) as user_id,
        cast(strategy_id as varchar) as strategy_id,
        cast(client_order_id as varchar) as client_order_id,
        lower(cast(exchange as varchar)) as exchange,
        upper(cast(symbol as varchar)) as symbol,
        lower(cast(side as varchar)) as side,
        lower(cast(order_type as varchar)) as order_type,
        cast(quantity as numeric(38, 18)) as quantity,
        cast(price as numeric(38, 18)) as price,
        cast(trigger_price as numeric(38, 18)) as trigger_price,
        lower(cast(status as varchar)) as status,
        cast(filled_quantity as numeric(38, 18)) as filled_quantity,
        cast(avg_fill_price as numeric(38, 18)) as avg_fill_price,
        cast(coalesce(fees, 0) as numeric(38, 18)) as fees,
        cast(reason as varchar) as reason,
        cast(created_at as timestamp with time zone) as created_at,
        cast(updated_at as timestamp with time zone) as updated_at,
        row_number() over (partition by id order by updated_at desc) as version_rank
    from {{ source('raw', 'orders') }}
    {% if is_incremental() %}where updated_at >= {{ changed_since('orders') }}{% endif %}
)

select
    order_id, account_id, user_id, strategy_id, client_order_id, exchange, symbol, side, order_type,
    quantity, price, trigger_price, status, filled_quantity, avg_fill_price, fees, reason, created_at, updated_at
from ranked
where version_rank = 1
