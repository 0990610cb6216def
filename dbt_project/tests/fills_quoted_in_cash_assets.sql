-- The cash ledger is single-currency: a fill's cash flow is booked as USDT, which is right only when the
-- symbol's quote asset is one of var('cash_assets') (USD stablecoins counted at par). A BTC- or ETH-quoted
-- fill (ETHBTC), or a symbol with no known quote suffix, would put coins into the USDT cash: fail instead of
-- publishing a wrong NAV. Fails with every such fill.
select fill_id, account_id, symbol, quote_asset
from {{ ref('int_fills_quote_fee') }}
where quote_asset is null
    or quote_asset not in ({% for asset in var('cash_assets') %}'{{ asset }}'{% if not loop.last %}, {% endif %}{% endfor %})
