"""The paper-trading OMS: a gRPC venue that fills against simulated prices (tests, paper mode).

Public surface: OmsSimServer, serve_forever, OmsSimConfig, the price sources and PaperVenue.
"""

from strategy_worker.oms_sim.config import OmsSimConfig, PricesConfig, ServerTlsConfig
from strategy_worker.oms_sim.faults import FaultSwitches
from strategy_worker.oms_sim.prices import ManualPrices, RandomWalkPrices, ReplayPrices
from strategy_worker.oms_sim.server import OmsSimServer, prices_for, serve_forever, venue_for
from strategy_worker.oms_sim.venue import OrderRequest, PaperVenue, SimOrder, VenueRules

__all__ = [
    "FaultSwitches",
    "ManualPrices",
    "OmsSimConfig",
    "OmsSimServer",
    "OrderRequest",
    "PaperVenue",
    "PricesConfig",
    "RandomWalkPrices",
    "ReplayPrices",
    "ServerTlsConfig",
    "SimOrder",
    "VenueRules",
    "prices_for",
    "serve_forever",
    "venue_for",
]
