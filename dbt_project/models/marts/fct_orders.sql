-- One row per order, latest version.
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
