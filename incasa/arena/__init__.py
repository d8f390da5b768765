"""Arena: blind side-by-side battles, votes and a Bradley-Terry leaderboard with confidence intervals."""
