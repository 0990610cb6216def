-- NAV break: an hourly NAV move beyond +/-50% that capital flows do not explain, i.e. |return| > 0.5 with
-- return = (nav - net_flows) / previous nav - 1.
-- Thresholds, and why:
--   * 50% in one hour: the largest hourly moves of BTC and ETH spot are around 10-15% (2020-03-12, 2021-05-19),
--     and an unlevered spot book cannot move more than its positions do; a 50% hourly jump is a data error
--     (a fill price or quantity off by a factor, a candle with a wrong close, a missing or doubled flow).
--   * previous NAV >= 10 quote units: below that an account holds dust, where one fee or one rounding can
--     legitimately be half the NAV.
-- Checked for every scope (a break in one account can be hidden in the fund's total, and the reverse is
-- impossible). Fails with every break.
select hour, scope, scope_id, previous_nav, nav, net_flows, "return"
from (
    select
        hour, scope, scope_id, nav, net_flows, "return",
        lag(nav) over (partition by scope, scope_id order by hour) as previous_nav
    from {{ ref('nav_hourly') }}
) as navs
where previous_nav >= 10
    and abs("return") > 0.5
