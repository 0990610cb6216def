-- One row per order, latest version.
-- Incremental: the orders of the raw partitions extracted since the last build (macros/incremental.sql).
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='order_id',
    meta={'changed_rows': {'column': 'updated_at', 'since': 'orders'}},
) }}

select
    order_id,
    account_id,
    user_id,
    strategy_id,
    symbol,
    side,
    order_type,
    status,
    quantity,
    filled_quantity,
    avg_fill_price,
    fees,
    created_at,
    updated_at
from {{ ref('stg_orders') }}
{% if is_incremental() %}where updated_at >= {{ changed_since('orders') }}{% endif %}
