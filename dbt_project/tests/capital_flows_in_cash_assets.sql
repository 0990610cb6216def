-- Capital flows are booked as quote cash (USDT): a deposit or withdrawal in another asset (a BTC transfer)
-- would be counted as that many USDT. Fails with every flow whose asset is not in var('cash_assets').
select flow_id, account_id, asset, amount
from {{ ref('stg_capital_flows') }}
where asset not in ({% for asset in var('cash_assets') %}'{{ asset }}'{% if not loop.last %}, {% endif %}{% endfor %})
