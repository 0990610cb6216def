{#- Hourly tests on the rows the build changed (docs/warehouse.md, "Tests on changed rows").

    With PATRIOT_DBT_TESTS=changed_rows (the hourly refresh sets it) a generic test of a model that declares
    `meta: {changed_rows: {column: <c>, since: <s>}}` reads only that model's rows changed by this build:
    `<c> >= changed_since('<s>')` for a raw table `<s>` (the rows of the partitions extracted since the last
    successful build), or `<c> >= recompute_from_hour()` (`since: hour`) and its UTC day (`since: day`) for the
    cumulative hourly and daily models. A uniqueness test keeps every row whose key occurs among the changed
    rows, so a new row that repeats the key of an old one still fails it. Row-level tests (not_null,
    accepted_values, positive, relationships of the child) then see every row a build touched; rows no build
    touched passed the same tests when they were built. Without the variable (full rebuilds, the nightly
    `full_tests` run, a plain `dbt build`) every test reads every row.

    The variable is read only when the test runs (`execute`), so switching it does not cost a re-parse. -#}

{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set changed = changed_rows_predicate() -%}
    {%- if not changed -%}
        {%- do return(adapter.dispatch('get_where_subquery', 'dbt')(relation)) -%}
    {%- endif -%}
    {%- set test = model.get('test_metadata') or {} -%}
    {%- set key = [model.get('column_name')] if test.get('name') == 'unique'
        else test.get('kwargs', {}).get('columns') if test.get('name') == 'unique_combination' else none -%}
    {%- if key -%}
        {#- uniqueness: every row sharing a key with a changed row, old rows included -#}
        {%- set matches = [] -%}
        {%- for column in key -%}{%- do matches.append('c.' ~ column ~ ' = t.' ~ column) -%}{%- endfor -%}
        {%- set filtered -%}
            (select * from {{ relation }} as t
             where exists (select 1 from {{ relation }} as c where {{ changed }} and {{ matches | join(' and ') }})
             {%- if where %} and ({{ where }}){% endif %}) dbt_subquery
        {%- endset -%}
    {%- else -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ changed }}{% if where %} and ({{ where }}){% endif %}) dbt_subquery
        {%- endset -%}
    {%- endif -%}
    {%- do return(filtered) -%}
{%- endmacro %}


{#- The changed-rows predicate of the model under test, or '' (test every row). Column names are left
    unqualified: inside the uniqueness subquery they resolve to the changed-row side `c`. -#}
{% macro changed_rows_predicate() -%}
    {%- if not execute or env_var('PATRIOT_DBT_TESTS', 'all') != 'changed_rows' -%}
        {%- do return('') -%}
    {%- endif -%}
    {%- set node = graph.nodes.get(model.get('attached_node') or '') -%}
    {%- set spec = (node.config.meta or {}).get('changed_rows') if node else none -%}
    {%- if not spec -%}
        {%- do return('') -%}
    {%- endif -%}
    {%- if spec.since == 'hour' -%}
        {%- do return(spec.column ~ ' >= ' ~ recompute_from_hour()) -%}
    {%- elif spec.since == 'day' -%}
        {%- do return(spec.column ~ ' >= ' ~ utc_date(recompute_from_hour())) -%}
    {%- else -%}
        {%- do return(spec.column ~ ' >= ' ~ changed_since(spec.since)) -%}
    {%- endif -%}
{%- endmacro %}
