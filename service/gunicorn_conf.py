"""gunicorn settings for `vlq api`: its own log lines go through VLQ's formatter, like the app's."""
from service.core.config import load_settings
from service.core.logs import gunicorn_logconfig

logconfig_dict = gunicorn_logconfig(load_settings().log_format)
