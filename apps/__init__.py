"""The applications built on beamish, apart from the library (each depends
on it only through its public tiers): `apps.chat`."""
