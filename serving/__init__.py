"""Serve the W2S reward model: `RewardScorer` (in-process), a Ray Serve HTTP app, and a client.

Heavy imports (torch, Ray Serve) stay in the submodules: `from actors.reward_model import RewardScorer`,
`from serving.server import serve_reward`, `from serving.client import RewardClient`.
"""
