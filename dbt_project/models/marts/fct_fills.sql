-- One row per fill, in quote terms: notional = quantity x price, fee_quote (see int_fills_quote_fee),
-- signed_quantity (+ buy, - sell), cash_flow (- buy cost, + sell proceeds, - fee).
-- Incremental: the fills of the raw partitions extracted since the last build (macros/incremental.sql).
{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='fill_id') }}

select
    fill_id,
    order_id,
    account_id,
    user_id,
    strategy_id,
    exchange,
    symbol,
    side,
    quantity,
    price,
    notional,
    fee_quote,
    filled_at,
    signed_quantity,
    cash_flow
from {{ ref('int_fills_quote_fee') }}
{% if is_incremental() %}where created_at >= {{ changed_since('fills') }}{% endif %}
