-- Every open position must have a mark: a NULL mark (no candle of the symbol on any exchange at or before the
-- hour's end) would make the NAV NULL. Fails with every unmarked open position.
select hour, account_id, symbol, quantity
from {{ ref('positions_hourly') }}
where quantity <> 0 and mark_price is null
