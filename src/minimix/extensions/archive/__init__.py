"""Message archives (XEP-0313): ``protocol`` holds the wire format shared by the user archive
(``user``) and room archives; storage is :mod:`minimix.storage.archive`."""
