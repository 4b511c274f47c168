"""The Functions entry point: logging, telemetry, the app, and each feature's blueprint. Nothing else."""

import azure.functions as func

from shared.abandoned_carts.blueprint import bp as abandoned_carts
from shared.customers.blueprint import bp as customers
from shared.logging_setup import configure_logging
from shared.privacy.blueprint import bp as privacy
from shared.recovery.blueprint import bp as recovery
from shared.telemetry import configure_telemetry

configure_logging()
# Before the functions are registered; a no-op without APPLICATIONINSIGHTS_CONNECTION_STRING.
configure_telemetry()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(abandoned_carts)
app.register_functions(customers)
app.register_functions(privacy)
app.register_functions(recovery)
