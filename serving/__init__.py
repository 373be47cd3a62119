"""Serve the W2S reward model: `RewardScorer` (in-process), a Ray Serve HTTP app, and a client.

Heavy imports (torch, Ray Serve) stay in the submodules: `from serving.scorer import RewardScorer`,
`from serving.server import serve_reward`, `from serving.client import RewardClient`.
"""
