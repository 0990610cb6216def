-- Fills, one row per id (an overlapping extract can copy the same row twice). Deliberately NOT deduplicated
-- on (account_id, exchange, trade_id): two ids for one venue trade is a data error that the uniqueness test
-- on this model reports instead of hiding.
-- Incremental: only the raw partitions extracted since the last build are ranked (macros/incremental.sql);
-- filtering on created_at before ranking keeps the same winner, since the latest version of an id is the one
-- with the greatest created_at.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='fill_id',
    meta={'changed_rows': {'column': 'created_at', 'since': 'fills'}},
) }}

with ranked as (
    select
        cast(id as varchar) as fill_id,
        cast(order_id as varchar) as order_id,
        cast(account_id as varchar) as account_id,
        cast(user_id as varchar) as user_id,
        lower(cast(exchange as varchar)) as exchange,
        upper(cast(symbol as varchar)) as symbol,
        lower(cast(side as varchar)) as side,
        cast(trade_id as varchar) as trade_id,
        cast(quantity as numeric(38, 18)) as quantity,
        cast(price as numeric(38, 18)) as price,
        cast(coalesce(fee, 0) as numeric(38, 18)) as fee,
        upper(cast(fee_asset as varchar)) as fee_asset,
        lower(cast(liquidity as varchar)) as liquidity,
        cast(filled_at as timestamp with time zone) as filled_at,
        cast(created_at as timestamp with time zone) as created_at,
        row_number() over (partition by id order by created_at desc) as version_rank
    from {{ source('raw', 'fills') }}
    {% if is_incremental() %}where created_at >= {{ changed_since('fills') }}{% endif %}
)

select
    fill_id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity, price, fee, fee_asset,
    liquidity, filled_at, created_at
from ranked
where version_rank = 1
