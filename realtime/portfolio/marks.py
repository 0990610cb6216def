"""How a position (alias ``p``) finds its mark (alias ``m``) in ``mark_prices``: same symbol, on the venue whose
prices it trades at. Simulator accounts trade at the Binance prices the simulator replays. One definition for
every query that marks positions (pre-trade exposure, the risk monitor, the read models)."""

MARKED_BY = "m.symbol = p.symbol AND m.exchange = CASE WHEN p.exchange = 'simulator' THEN 'binance' ELSE p.exchange END"
