-- Trading activity of each scope over the whole history: fees and traded notional (weighted like NAV) and
-- the number of fills. Every scope of int_scope_accounts has a row, with zeros when it never traded.
-- Each account's totals first (a weight applies to a sum as to its terms), then one row per scope member.
with accounts as (
    select account_id, sum(notional) as notional, sum(fee_quote) as fee_quote, count(*) as fills
    from {{ ref('int_fills_quote_fee') }}
    group by account_id
)

select
    s.scope,
    s.scope_id,
    coalesce(sum({{ apply_weight('a.fee_quote', 's.weight') }}), 0) as fees,
    coalesce(sum({{ apply_weight('a.notional', 's.weight') }}), 0) as traded_notional,
    coalesce(sum(a.fills), 0) as fills
from {{ ref('int_scope_accounts') }} as s
left join accounts as a on a.account_id = s.account_id
group by s.scope, s.scope_id
