"""A LangGraph checkpointer on snapstore: ``from snapstore.langgraph import SnapstoreSaver``.

Needs the ``langgraph`` extra: ``pip install 'snapstore[langgraph]'``.
"""

from .saver import SnapstoreSaver

__all__ = ["SnapstoreSaver"]
