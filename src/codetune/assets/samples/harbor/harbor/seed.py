"""seed: a small marina to play with: three pontoons, a dozen berths, a few customers."""

from __future__ import annotations

from harbor.app import App
from harbor.logs import get_logger
from harbor.models import Berth, Vessel
from harbor.models.berth import ensure_berth
from harbor.models.vessel import ensure_vessel

log = get_logger(__name__)

BERTHS = [
    ("A", 1200, 400, 250), ("A", 1200, 400, 250), ("A", 1500, 450, 300), ("A", 1500, 450, 300),
    ("B", 900, 350, 200), ("B", 900, 350, 200), ("B", 1000, 380, 220), ("B", 1000, 380, 220),
    ("C", 2000, 600, 400), ("C", 2000, 600, 400), ("C", 2500, 700, 450), ("C", 2500, 700, 450),
]

CUSTOMERS = [
    ("Ada Lindqvist", "ada@example.org", [("Skylark", 1120, 380, 180)]),
    ("Bram de Wit", "bram@example.org", [("Noordster", 1450, 440, 210)]),
    ("Chiara Rossi", "chiara@example.org", [("Libeccio", 860, 300, 150),
                                            ("Maestrale", 1980, 560, 320)]),
]


def seed(app: App) -> App:
    for number, (pontoon, length, beam, depth) in enumerate(BERTHS, start=1):
        berth = ensure_berth(Berth(id=f"B-{number:02d}", pontoon=pontoon, max_length_cm=length,
                                   max_beam_cm=beam, depth_cm=depth))
        app.berths.store(berth)
    for name, email, boats in CUSTOMERS:
        customer = app.customer_service.register(name, email)
        for boat, length, beam, draft in boats:
            vessel = ensure_vessel(Vessel(id=app.scheduling.ids.next("vessel"), name=boat,
                                          owner_id=customer.id, length_cm=length,
                                          beam_cm=beam, draft_cm=draft))
            app.vessels.store(vessel)
    log.info("seeded", berths=len(app.berths), vessels=len(app.vessels))
    return app
