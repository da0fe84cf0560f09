"""Coins earned by activity: the daily reward and referrals."""
