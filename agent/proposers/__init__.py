"""Proposers turn a stage's context into candidate sources: the LLM, or the built-in search."""

from agent.proposers.base import ProposalContext, Proposer

__all__ = ["ProposalContext", "Proposer"]
