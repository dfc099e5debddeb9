"""provisiond-agent: runs on each node after its first boot (filled by the agent issue).

It must run with the node's system Python and `requests` only.
"""

__version__ = "0.1.0"
