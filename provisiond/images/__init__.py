"""The image install method: the deploy layout script, root image and deploy ramdisk builds."""
