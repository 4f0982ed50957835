import os

from hypothesis import HealthCheck, settings

# CI runs more examples; local runs stay quick. Never a deadline: 2 shared cores are noisy.
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")
