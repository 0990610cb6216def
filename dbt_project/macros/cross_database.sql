{#- SQL that differs between DuckDB (local) and PostgreSQL (production) goes through adapter.dispatch.
    `default__` is the PostgreSQL spelling; `duckdb__` overrides it where DuckDB differs. -#}


{#- The UTC hour an instant falls in, as a timestamptz. Explicitly UTC: a session time zone with a
    half-hour offset (Asia/Kolkata) would otherwise cut hours at :30. -#}
{% macro date_trunc_hour(ts) -%}
    {{ return(adapter.dispatch('date_trunc_hour', 'patriot')(ts)) }}
{%- endmacro %}

{% macro default__date_trunc_hour(ts) -%}
    date_trunc('hour', {{ ts }}, 'UTC')
{%- endmacro %}

{% macro postgres__date_trunc_hour(ts) -%}
    {{ patriot.default__date_trunc_hour(ts) }}
{%- endmacro %}

{% macro duckdb__date_trunc_hour(ts) -%}
    (date_trunc('hour', ({{ ts }}) at time zone 'UTC') at time zone 'UTC')
{%- endmacro %}


{#- The UTC calendar day of an instant (same spelling on both engines). -#}
{% macro utc_date(ts) -%}
    cast(({{ ts }}) at time zone 'UTC' as date)
{%- endmacro %}


{#- A FROM-clause fragment: one row per hour from start_hour to end_hour inclusive, for each row of the
    relation it follows (a lateral join on the outer row's bounds), exposed as alias.column. -#}
{% macro cross_join_hours(start_hour, end_hour, alias='calendar', column='hour') -%}
    {{ return(adapter.dispatch('cross_join_hours', 'patriot')(start_hour, end_hour, alias, column)) }}
{%- endmacro %}

{% macro default__cross_join_hours(start_hour, end_hour, alias, column) -%}
    cross join lateral generate_series({{ start_hour }}, {{ end_hour }}, interval '1 hour') as {{ alias }}({{ column }})
{%- endmacro %}

{% macro postgres__cross_join_hours(start_hour, end_hour, alias, column) -%}
    {{ patriot.default__cross_join_hours(start_hour, end_hour, alias, column) }}
{%- endmacro %}

{% macro duckdb__cross_join_hours(start_hour, end_hour, alias, column) -%}
    {#- DuckDB's scalar generate_series returns a list; unnest it in a lateral subquery. -#}
    cross join lateral (
        select unnest(generate_series({{ start_hour }}, {{ end_hour }}, interval '1 hour')) as {{ column }}
    ) as {{ alias }}
{%- endmacro %}


{#- quantity x price as an exact NUMERIC(38,18).
    PostgreSQL NUMERIC multiplies exactly at any scale. DuckDB adds the scales of DECIMAL operands and refuses
    (overflow) when the result needs more than 38 digits, so DECIMAL(38,18) x DECIMAL(38,18) fails for any
    real notional; the operands are narrowed to 12 decimals (quantity) and 10 decimals (price), which leaves
    16 integer digits for the product and is exact for venue precisions (Binance and Bybit: <= 8 decimals). -#}
{% macro money_multiply(quantity, price) -%}
    {{ return(adapter.dispatch('money_multiply', 'patriot')(quantity, price)) }}
{%- endmacro %}

{% macro default__money_multiply(quantity, price) -%}
    cast(({{ quantity }}) * ({{ price }}) as numeric(38, 18))
{%- endmacro %}

{% macro postgres__money_multiply(quantity, price) -%}
    {{ patriot.default__money_multiply(quantity, price) }}
{%- endmacro %}

{% macro duckdb__money_multiply(quantity, price) -%}
    cast(cast({{ quantity }} as decimal(38, 12)) * cast({{ price }} as decimal(38, 10)) as decimal(38, 18))
{%- endmacro %}
