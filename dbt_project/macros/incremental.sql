{#- Incremental builds (docs/warehouse.md, "Incremental builds").

    The hourly models are cumulative (cash, positions, NAV returns), so an incremental build recomputes every
    hour from `recompute_from_hour()` on, continuing from the model's own row of the hour before, and replaces
    those hours (delete+insert on `hour`). The first hour to recompute is the hour of the earliest fill,
    capital flow or candle in any raw partition extracted since the start of the last successful build
    (`patriot_builds`, written at the end of every build without an error or a failed test); a whole-table
    reload of those tables, or no successful build yet, recomputes everything. With nothing new it is
    'infinity' and the incremental models insert nothing. `dbt build --full-refresh` rebuilds from scratch. -#}

{% macro builds_table() -%}
    {{ target.schema }}.patriot_builds
{%- endmacro %}


{% macro create_builds_table() -%}
    create table if not exists {{ builds_table() }} (
        invocation_id varchar not null, started_at timestamp with time zone not null
    )
{%- endmacro %}


{#- on-run-end: record this build as the new baseline when nothing in it errored or failed. -#}
{% macro record_build(results) -%}
    {%- set bad = results | selectattr('status', 'in', ['error', 'fail', 'runtime error']) | list -%}
    {%- if execute and bad | length == 0 -%}
        insert into {{ builds_table() }} (invocation_id, started_at)
        values ('{{ invocation_id }}', cast('{{ run_started_at.isoformat() }}' as timestamp with time zone))
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#- The partition days of `table_name` extracted since the last successful build; a NULL day (whole-table
    reload) sorts first, so `min` over it yields NULL and `changed_since` then falls back to everything. -#}
{% macro changed_since(table_name) -%}
    (
        select min(coalesce(cast(l.partition_day as timestamp with time zone), cast('-infinity' as timestamp with time zone)))
        from {{ source('raw', '_extract_log') }} as l
        where l.table_name = '{{ table_name }}'
            and l.extracted_at > (
                select coalesce(max(b.started_at), cast('-infinity' as timestamp with time zone))
                from {{ builds_table() }} as b
            )
    )
{%- endmacro %}


{#- The first hour an incremental build recomputes (a scalar subquery); 'infinity' when nothing changed. -#}
{% macro recompute_from_hour() -%}
    (
        select coalesce({{ date_trunc_hour('min(changed_at)') }}, cast('infinity' as timestamp with time zone))
        from (
            select min(filled_at) as changed_at
            from {{ source('raw', 'fills') }}
            where created_at >= {{ changed_since('fills') }}
            union all
            select min(ts)
            from {{ source('raw', 'capital_flows') }}
            where created_at >= {{ changed_since('capital_flows') }}
            union all
            select min(open_time)
            from {{ source('raw', 'market_candles') }}
            where open_time >= {{ changed_since('market_candles') }}
        ) as changes
    )
{%- endmacro %}
