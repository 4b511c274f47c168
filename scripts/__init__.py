"""Operator tools that run on an operator's machine, never in the function app (.funcignore)."""
