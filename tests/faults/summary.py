"""What the fault tests injected and what the platform held, collected while
they run and printed as one table at the end of the session (conftest.py)."""

FAULTS: list[dict] = []  # {"fault", "injected", "outcome", "survived"}
LOAD: list[dict] = []  # {"scenario", "requests", "ok", "errors", "logged", "rate", "p50_ms", "p99_ms", "note"}


def fault(name: str, *, injected: int, outcome: str, survived: bool) -> None:
    FAULTS.append({"fault": name, "injected": injected, "outcome": outcome, "survived": survived})


def load(scenario: str, **figures) -> None:
    LOAD.append({"scenario": scenario, **figures})


def lines() -> list[str]:
    out = []
    if FAULTS:
        out.append(f"{'fault':<64} {'injected':>8}  {'survived':<8}  outcome")
        for row in FAULTS:
            out.append(
                f"{row['fault']:<64} {row['injected']:>8}  {'yes' if row['survived'] else 'NO':<8}  {row['outcome']}"
            )
    if LOAD:
        if out:
            out.append("")
        out.append(
            f"{'load':<40} {'requests':>8} {'200':>6} {'errors':>6} {'logged':>7} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7}"
        )
        for row in LOAD:
            out.append(
                f"{row['scenario']:<40} {row['requests']:>8} {row['ok']:>6} {row['errors']:>6} {row['logged']:>7} "
                f"{row['rate']:>6.1f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f}"
            )
            if row.get("note"):
                out.append(f"    {row['note']}")
    return out
