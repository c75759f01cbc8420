from evsim.cli import entry

entry()
