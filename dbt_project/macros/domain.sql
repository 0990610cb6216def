{#- Small domain helpers shared by several models (portable SQL, no dispatch needed). -#}


{#- The quote asset of a symbol: the longest suffix of var('quote_assets') it ends with (NULL if none). -#}
{% macro quote_asset(symbol) -%}
    {%- set quotes = var('quote_assets') -%}
    {%- set max_length = quotes | map('length') | max -%}
    case
    {%- for n in range(max_length, 0, -1) %}
    {%- for quote in quotes if quote | length == n %}
        when length({{ symbol }}) > {{ n }} and right({{ symbol }}, {{ n }}) = '{{ quote }}' then '{{ quote }}'
    {%- endfor %}
    {%- endfor %}
    end
{%- endmacro %}


{#- The base asset of a symbol given its quote asset: the symbol minus the quote suffix. -#}
{% macro base_asset(symbol, quote) -%}
    left({{ symbol }}, length({{ symbol }}) - length({{ quote }}))
{%- endmacro %}


{#- The length of a candle interval ('1m', '15m', '4h', '1d', '1w', '1s') in seconds; NULL for any other
    spelling (a month '1M' has no fixed length), which the not_null test on stg_market_candles reports. -#}
{% macro interval_seconds(candle_interval) -%}
    (case right({{ candle_interval }}, 1)
        when 's' then 1
        when 'm' then 60
        when 'h' then 3600
        when 'd' then 86400
        when 'w' then 604800
    end * cast(left({{ candle_interval }}, length({{ candle_interval }}) - 1) as integer))
{%- endmacro %}


{#- A scope's share of an account's money: exact when the weight is 1 (account, user, fund and single-strategy
    accounts), otherwise the weighted figure rounded to NUMERIC(38,18). -#}
{% macro apply_weight(amount, weight) -%}
    (case when {{ weight }} = 1 then {{ amount }}
        else cast(cast({{ amount }} as double precision) * {{ weight }} as numeric(38, 18)) end)
{%- endmacro %}


{#- Time-weighted return of a period: (nav_t - net_flows_t) / nav_{t-1} - 1, defined only when the previous
    NAV is positive (the first period of a scope has no previous capital). -#}
{% macro period_return(nav, net_flows, previous_nav) -%}
    (case when {{ previous_nav }} > 0
        then cast({{ nav }} - {{ net_flows }} as double precision) / cast({{ previous_nav }} as double precision) - 1
    end)
{%- endmacro %}


{#- The hour a candle marks: the hour whose end is the first at or after the candle's close, i.e. the hour
    containing close_time - 1 microsecond (the 1m candle opened at 10:59 and the 1h candle opened at 10:00 both
    close at 11:00 and mark hour 10:00, whose end is 11:00). -#}
{% macro candle_mark_hour(close_time) -%}
    {{ date_trunc_hour(close_time ~ " - interval '1 microsecond'") }}
{%- endmacro %}
