include $(sort $(wildcard $(BR2_EXTERNAL_AIRGAP_VAULT_PATH)/package/*/*.mk))
