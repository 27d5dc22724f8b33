"""The endpoints, one module per group of the contract (../shared/API.md)."""
