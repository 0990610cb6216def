-- One row per fill, in quote terms: notional = quantity x price, fee_quote (see int_fills_quote_fee),
-- signed_quantity (+ buy, - sell), cash_flow (- buy cost, + sell proceeds, - fee).
-- created_at: when the platform recorded the fill (a late fill is recorded after its filled_at).
-- Incremental: the fills of the raw partitions extracted since the last build (macros/incremental.sql).
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='fill_id',
    on_schema_change='append_new_columns',
    meta={'changed_rows': {'column': 'created_at', 'since': 'fills'}},
) }}

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
    cash_flow,
    created_at
from {{ ref('int_fills_quote_fee') }}
{% if is_incremental() %}where created_at >= {{ changed_since('fills') }}{% endif %}
