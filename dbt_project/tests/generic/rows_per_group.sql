{#- Fails with every group of `group_by` whose row count is not `expected` (e.g. 3 methods x 2 levels of
    VaR per scope). -#}
{% test rows_per_group(model, group_by, expected) %}
select {{ group_by | join(', ') }}, count(*) as row_count
from {{ model }}
group by {{ group_by | join(', ') }}
having count(*) <> {{ expected }}
{% endtest %}
