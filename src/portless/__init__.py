"""portless: a self-hosted Session Manager that speaks the AWS SSM wire protocols."""

__version__ = "0.1.0"
