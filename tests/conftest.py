import os

from hypothesis import HealthCheck, settings

# CI runs more examples; local runs stay quick. Never a deadline: 2 shared cores are noisy.
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# Measured tables (error per codec/schedule/p, ...) that tests register with `report(title, rows)`;
# printed once at the end of the run so CI logs carry the figures the bounds are checked against.
_REPORTS: list[tuple[str, list[str]]] = []


def report(title: str, lines: list[str]) -> None:
    _REPORTS.append((title, lines))


def pytest_terminal_summary(terminalreporter):
    for title, lines in _REPORTS:
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
