{#- DuckDB: the marts moved from the working file's `marts` schema to a file of their own, attached as `marts`
    (profiles.yml). A working file from before keeps a `marts` schema that would make `marts.<table>` ambiguous
    in a connection with the file attached, and holds a stale copy of every mart: it is dropped. -#}
{% macro drop_legacy_marts_schema() -%}
    {%- if target.type == 'duckdb' -%}
        drop schema if exists "{{ target.database }}"."marts" cascade
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
