{#- Fails with every row in which any of `columns` is NULL: the not_null tests of one model in one query, one
    dbt node instead of one per column (each test node costs the hourly build about 40 ms of dbt's own work).
    The failing rows show the columns, so which one is NULL can be read off them. -#}
{% test not_null_columns(model, columns) %}
select {{ columns | join(', ') }}
from {{ model }}
where {{ columns | join(' is null or ') }} is null
{% endtest %}
