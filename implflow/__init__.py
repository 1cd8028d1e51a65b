"""implflow: durable, AI-assisted software implementation on Temporal."""

__version__ = "0.1.0"

TASK_QUEUE = "implflow"
WORKFLOW_TYPE = "ImplementationWorkflow"
