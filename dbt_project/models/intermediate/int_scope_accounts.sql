-- Which accounts make up each scope, and with what weight: an account is its own scope, belongs to its user
-- and to the fund with weight 1, and to each strategy actively assigned to it with its allocation share
-- (allocation / sum of the account's active allocations; equal shares if those are all zero). Every scoped
-- mart (NAV, exposures, activity, trade statistics) aggregates accounts through this one table.
with accounts as (
    select account_id, user_id from {{ ref('stg_accounts') }}
),

assignments as (
    select
        a.strategy_id,
        a.account_id,
        a.allocation,
        sum(a.allocation) over (partition by a.account_id) as account_allocation,
        count(*) over (partition by a.account_id) as account_strategies
    from {{ ref('stg_strategy_assignments') }} as a
    inner join accounts as acc on acc.account_id = a.account_id
    where a.active
)

select 'account' as scope, account_id as scope_id, account_id, cast(1 as double precision) as weight
from accounts
union all
select 'user', user_id, account_id, cast(1 as double precision)
from accounts
union all
select
    'strategy',
    strategy_id,
    account_id,
    case
        when allocation = account_allocation then cast(1 as double precision)
        when account_allocation > 0
            then cast(allocation as double precision) / cast(account_allocation as double precision)
        else cast(1 as double precision) / account_strategies
    end
from assignments
union all
select 'fund', '', account_id, cast(1 as double precision)
from accounts
