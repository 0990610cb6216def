{#- Fails with every row whose value is zero, negative or NULL: quantities and prices of executions. -#}
{% test positive(model, column_name) %}
select *
from {{ model }}
where not ({{ column_name }} > 0) or {{ column_name }} is null
{% endtest %}
